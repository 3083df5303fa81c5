#!/usr/bin/env python
"""Multi30k tokenisation / SentencePiece / detokenisation.

    python recipes/multi30k/text.py ARGS   ==   python -m fairseq_plugins.translation.text ARGS

The code lives in the installed package (:mod:`fairseq_plugins.translation.text`); this file only calls it.
"""
import sys

from fairseq_plugins.translation.text import main

if __name__ == "__main__":
    sys.exit(main())
