"""Knowledge: full-text search, similar solved requests, articles (issue 13)."""
