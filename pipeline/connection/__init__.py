"""Peer connection plumbing: ICE introspection (``ice_probe``) and the
plain-words explanation of a missing route (``diagnostics``, Appendix A.4)."""
