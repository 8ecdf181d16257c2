"""The namespace lab, the demo and the VM runner (`argoctl lab`, `argoctl demo`):
they drive the agent; the agent never imports them."""
