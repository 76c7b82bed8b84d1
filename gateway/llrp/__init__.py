"""LLRP on the wire, without I/O: ``codec`` (framing, header, message types, encoders and decoders
in both directions).

The gateway's reader adapter frames the reader's byte stream and writes its own messages with it;
the reader simulator (``simulators.llrp``) speaks the reader side with it. It lives in the gateway
because the gateway never imports the simulators, while they may import the gateway.
"""
