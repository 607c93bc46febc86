#!/usr/bin/perl
# web-api: a JSON API on HTTP::Daemon with optional plugins (perl modules) loaded per run.
# Knobs: PORT, PLUGINS="Digest::SHA Storable Time::Piece ..." (loaded with require),
# JSON_CANONICAL=0|1, ITEMS (size of the in-memory catalogue), CRASH=0|1 (unknown plugin: dies).
use strict;
use warnings;
use HTTP::Daemon;
use HTTP::Status;
use HTTP::Response;
use JSON;

$| = 1;

my $port = $ENV{PORT} || 18082;
my @plugins = split ' ', ($ENV{PLUGINS} || '');
push @plugins, 'Corpus::Missing::Plugin' if ($ENV{CRASH} || 0) == 1;
for my $p (@plugins) {
    (my $file = "$p.pm") =~ s{::}{/}g;
    eval { require $file; 1 } or do { print "FATAL cannot load plugin $p\n"; exit 3 };
}
my $json = JSON->new->utf8;
$json->canonical(1) if ($ENV{JSON_CANONICAL} || 0);
my %catalogue = map { ("item$_" => { id => $_, price => $_ * 1.5 }) } 1 .. ($ENV{ITEMS} || 100);

my $d = HTTP::Daemon->new(LocalAddr => '127.0.0.1', LocalPort => $port, ReuseAddr => 1)
    or die "cannot listen on $port: $!";
$SIG{TERM} = sub { exit 0 };

my $child = fork();
if (defined $child && $child == 0) {
    exec '/opt/app/probe.pl', $port, '/healthz', '/items';
}
my $probe_done = 0;
$d->timeout(0.1);  # accept returns periodically so the probe's result is noticed promptly
while (1) {
    if (!$probe_done && waitpid($child, 1) == $child) {  # 1 = WNOHANG
        $probe_done = 1;
        if ($? == 0) {
            open my $fh, '>', '/tmp/ready.tmp' or die; print $fh "ready\n"; close $fh;
            rename '/tmp/ready.tmp', ($ENV{READY_FILE} || '/tmp/ready');
            print "READY port=$port\n";
        }
        else { print "FATAL health probe failed\n"; exit 4 }
    }
    my $c = $d->accept or next;
    while (my $r = $c->get_request) {
        my $body;
        if ($r->uri->path eq '/healthz') { $body = { ok => JSON::true } }
        elsif ($r->uri->path eq '/items') {
            $body = { count => scalar keys %catalogue, plugins => \@plugins };
            $body->{digest} = Digest::SHA::sha256_hex(join ',', sort keys %catalogue)
                if grep { $_ eq 'Digest::SHA' } @plugins;
            $body->{now} = Time::Piece::localtime()->datetime if grep { $_ eq 'Time::Piece' } @plugins;
        }
        else { $c->send_error(RC_NOT_FOUND); next }
        my $res = HTTP::Response->new(200, 'OK', ['Content-Type' => 'application/json'],
                                      $json->encode($body));
        $c->send_response($res);
    }
    $c->close;
}
