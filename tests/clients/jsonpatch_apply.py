"""Applies an RFC 6902 JSON patch (the PyPI `jsonpatch` package, not our code) to a document.

usage: jsonpatch_apply.py DOC.json PATCH.json OUT.json
"""
import json
import sys

import jsonpatch

doc = json.load(open(sys.argv[1]))
patch = json.load(open(sys.argv[2]))
json.dump(jsonpatch.apply_patch(doc, patch), open(sys.argv[3], "w"), indent=1)
