//! A flat root filesystem tar (`docker export`, `podman export`, `tar -C rootfs -c .`): a tar
//! archive with no image metadata in it. The whole file is the single layer.
//!
//! There is no config and so no diff_id to check the layer against; the tar itself is validated
//! by the scan that classified it (every header parses, nothing is truncated) and, member by
//! member, by the layer indexer.

use std::path::Path;

use super::{Image, LayerBlob, SourceKind};

/// The image made of the flat rootfs tar `archive` (canonical path, `len` bytes).
pub(super) fn open(archive: &Path, len: u64) -> Image {
    Image {
        kind: SourceKind::RootfsTar,
        layers: vec![LayerBlob {
            file: archive.to_owned(),
            offset: 0,
            len,
            diff_id: None,
        }],
        config: None,
        names: Vec::new(),
        parent: None,
        manifest_digest: None,
    }
}

#[cfg(test)]
mod tests {
    use std::fs::{self, File};

    use crate::image::{Error, OpenOptions, SourceKind, open};

    #[test]
    fn a_tar_without_image_metadata_is_one_layer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rootfs.tar");
        let mut builder = tar::Builder::new(File::create(&path).expect("create"));
        let mut header = tar::Header::new_ustar();
        header.set_size(5);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, "etc/hostname", &b"host\n"[..])
            .expect("append");
        builder.into_inner().expect("finish");

        let image = open(&path, &OpenOptions::new(dir.path().join("root"))).expect("open");
        assert_eq!(image.kind, SourceKind::RootfsTar);
        assert_eq!(image.layers.len(), 1);
        let layer = &image.layers[0];
        assert_eq!(layer.file, fs::canonicalize(&path).expect("canonical"));
        assert_eq!((layer.offset, layer.diff_id), (0, None));
        assert_eq!(layer.len, fs::metadata(&path).expect("stat").len());
        assert!(image.config.is_none() && image.names.is_empty());
        assert!(
            !dir.path().join("root").exists(),
            "nothing written for a flat tar"
        );
    }

    #[test]
    fn an_empty_file_is_not_an_image() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("empty");
        File::create(&path).expect("create");
        assert!(matches!(
            open(&path, &OpenOptions::new(dir.path())),
            Err(Error::NotAnImage { .. })
        ));
    }
}
