"""The RQ side: maintenance windows that delete, fence writes, garbage-collect and restart the registry."""
