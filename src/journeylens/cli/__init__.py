"""The journeylens command line."""
