"""The registry's storage read directly: one interface (`driver.Storage`) with two implementations, the
filesystem in the registry's container (`filesystem`, over the busybox commands in `files`) and S3 or an
S3-compatible store (`s3`, with boto3), picked by `drivers.open_storage`; the layout both use (`layout`, every
path built from a validated name), revisions seen by the last window (`revisions`), blob sizes (`freed`) and
the content cache of manifests and configs (`contents`).

May import: `janitor.errors`, `janitor.config`, `janitor.registry`.
"""
