"""hemalite.edge: runtime loader, sources (camera/folder/video), classify, edge-classify."""
