#!/usr/bin/env python
"""Attention heatmap of one premise/hypothesis pair.

    python recipes/snli/heatmap.py ARGS   ==   python -m fairseq_plugins.nli.heatmap ARGS

The code lives in the installed package (:mod:`fairseq_plugins.nli.heatmap`); this file only calls it.
"""
import sys

from fairseq_plugins.nli.heatmap import main

if __name__ == "__main__":
    sys.exit(main())
