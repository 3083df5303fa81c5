#!/usr/bin/env python
"""Read the SNLI recipe's fairseq logs.

    python recipes/snli/parse_log.py ARGS   ==   python -m fairseq_plugins.nli.parse_log ARGS

The code lives in the installed package (:mod:`fairseq_plugins.nli.parse_log`); this file only calls it.
"""
import sys

from fairseq_plugins.nli.parse_log import main

if __name__ == "__main__":
    sys.exit(main())
