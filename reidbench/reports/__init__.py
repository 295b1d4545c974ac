"""How results are shown: tables and plots built from measurement records."""
