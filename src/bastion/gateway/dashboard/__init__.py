"""The gateway's dashboard: one static page (no CDN, no build step) that reads the admin API with the key typed into it."""
