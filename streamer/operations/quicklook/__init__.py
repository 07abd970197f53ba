"""``streamer view``: the quick-look page over the sink's archive."""
