"""The running gateway's parts, built and started by gateway/app.py."""
