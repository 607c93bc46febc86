#!/usr/bin/perl
# Health probe: GET each path on 127.0.0.1:<port> until all answer 200 (or 10 s pass).
use strict;
use warnings;
use HTTP::Tiny;

my ($port, @paths) = @ARGV;
my $http = HTTP::Tiny->new(timeout => 2);
my $deadline = time + 10;
for my $path (@paths) {
    while (1) {
        my $res = $http->get("http://127.0.0.1:$port$path");
        last if $res->{status} == 200;
        die "probe $path failed: $res->{status}\n" if time > $deadline;
        select(undef, undef, undef, 0.05);
    }
}
