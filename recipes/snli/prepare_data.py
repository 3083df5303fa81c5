#!/usr/bin/env python
"""SNLI jsonl -> tokenised text.

    python recipes/snli/prepare_data.py ARGS   ==   python -m fairseq_plugins.nli.prepare_data ARGS

The code lives in the installed package (:mod:`fairseq_plugins.nli.prepare_data`); this file only calls it.
"""
import sys

from fairseq_plugins.nli.prepare_data import main

if __name__ == "__main__":
    sys.exit(main())
