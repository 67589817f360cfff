"""How the sweep's cells run: in process or on Celery workers, and exact cell rectangles."""
