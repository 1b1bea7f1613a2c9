"""crawlsched: a scheduler for recurring crawl jobs."""

__version__ = "0.1.0"
