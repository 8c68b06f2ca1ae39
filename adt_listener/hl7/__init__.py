"""Pure HL7 v2 building blocks: MLLP framing, ER7 reading, escapes, character sets, ACKs.

Nothing in this package does I/O; each module is tested by feeding it bytes or strings.
"""
