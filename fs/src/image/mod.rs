//! Image inputs: detects what a SOURCE is from its content and returns its layers, bottom to top.
//!
//! Supported: a `docker save` archive (manifest.json, layer tars that may be symlinks), an OCI
//! image layout as a directory or a tar (index.json, nested indexes, platform choice), and a flat
//! rootfs tar (`docker export`). Uncompressed layers inside a tar archive are served in place (a
//! byte range of the archive); compressed layers (gzip, zstd) are decompressed once into
//! `<root>/blobs/sha256/<diff_id hex>` and served from there.
