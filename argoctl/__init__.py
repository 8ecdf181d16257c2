"""argoctl: smart routing (Argo) and reachability (Orpheus) for a fleet of Linux hosts."""

__version__ = "0.1.0"
