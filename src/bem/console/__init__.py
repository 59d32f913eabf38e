"""The web console: static pages and scripts, served by ``bem serve`` under ``/console``.

No build step and nothing from a CDN: plain ES modules written for BEM (the 3D viewer draws
BEM's own GLB profile with WebGL2), using only BEM's public API with the signed-in user's
token, under a strict Content-Security-Policy (scripts and styles from this origin only).
"""
