"""Python code generated from ``protos/`` (protobuf messages, gRPC stubs, ``.pyi`` types).

Do not edit: run ``make protos`` (``.venv/bin/python protos/generate.py``) and commit.
"""
