#!/usr/bin/env python
"""Sparsity, rows and heatmap of a Multi30k model.

    python recipes/multi30k/analyze.py ARGS   ==   python -m fairseq_plugins.translation.analyze ARGS

The code lives in the installed package (:mod:`fairseq_plugins.translation.analyze`); this file only calls it.
"""
import sys

from fairseq_plugins.translation.analyze import main

if __name__ == "__main__":
    sys.exit(main())
