"""Worker processes of the pipeline: reader, hasher and writer.

Each worker attaches to a shared-memory ring owned by the supervisor and
exchanges slot descriptors with the connection process over OS pipes.
"""
