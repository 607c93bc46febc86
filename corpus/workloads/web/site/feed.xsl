<?xml version="1.0"?>
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
<xsl:template match="/"><html><body><xsl:for-each select="feed/entry"><p><xsl:value-of select="title"/></p></xsl:for-each></body></html></xsl:template>
</xsl:stylesheet>
