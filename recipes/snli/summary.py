#!/usr/bin/env python
"""The summary table of run.sh.

    python recipes/snli/summary.py ARGS   ==   python -m fairseq_plugins.nli.summary ARGS

The code lives in the installed package (:mod:`fairseq_plugins.nli.summary`); this file only calls it.
"""
import sys

from fairseq_plugins.nli.summary import main

if __name__ == "__main__":
    sys.exit(main())
