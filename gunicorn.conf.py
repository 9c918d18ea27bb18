"""gunicorn reads this file from the working directory it starts in (the repository root, /app in the image)."""

from service import gunicorn_errors

# Answers gunicorn gives itself (414 for an over-long request line, 431, 400) in the JSON error shape.
gunicorn_errors.install()
