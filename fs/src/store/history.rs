//! `rfs history`: the rows `docker history` prints, newest first.
//!
//! One row per entry of the config's `history`; an entry that is not `empty_layer` owns the
//! next layer, and its size is that layer's. A config without history gets one row per layer.
//!
//! The IMAGE column: Docker walks its local parent chain, giving the top row the image's ID and
//! each next row the next parent's, and prints `<missing>` past the end of the chain (so an
//! image pulled or loaded alone shows its ID once). The store has no build cache, so it finds
//! the chain in what it holds: the parent an image was committed from, else the stored image
//! whose history and layers are a proper prefix of this one's (the image it was built FROM).
//! An ancestor's ID goes on the row of its own newest history entry; every other row is
//! `<missing>`. For a chain of one image per history entry this is exactly Docker's walk.

use std::collections::BTreeSet;

use super::{Error, Reference, Store, StoredImage, Timestamp};
use crate::digest::Digest;
use crate::image::model::HistoryEntry;

/// One row of `rfs history`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryRow {
    /// The image whose newest step this is, or `None` (`<missing>`).
    pub id: Option<Digest>,
    /// That image's tags.
    pub tags: Vec<Reference>,
    /// When the step ran.
    pub created: Option<Timestamp>,
    /// The command of the step.
    pub created_by: String,
    /// The size of the layer it made (0 for an empty layer).
    pub size: u64,
    /// The step's comment.
    pub comment: String,
    /// Whether the step made no layer.
    pub empty_layer: bool,
}

impl Store {
    /// The history rows of `image`, newest first.
    ///
    /// # Errors
    ///
    /// `index.json` or another image's config cannot be read.
    pub fn history(&self, image: &StoredImage) -> Result<Vec<HistoryRow>, Error> {
        let history = &image.config.history;
        let mut rows = Vec::new();
        if history.is_empty() {
            for size in &image.meta.layer_sizes {
                rows.push(HistoryRow {
                    id: None,
                    tags: Vec::new(),
                    created: image.created(),
                    created_by: String::new(),
                    size: *size,
                    comment: String::new(),
                    empty_layer: false,
                });
            }
        } else {
            let mut layer = 0;
            for entry in history {
                let empty_layer = entry.is_empty_layer();
                let size = if empty_layer {
                    0
                } else {
                    layer += 1;
                    image.meta.layer_sizes.get(layer - 1).copied().unwrap_or(0)
                };
                rows.push(HistoryRow {
                    id: None,
                    tags: Vec::new(),
                    created: entry.created.as_deref().and_then(Timestamp::parse),
                    created_by: entry.created_by.clone().unwrap_or_default(),
                    size,
                    comment: entry.comment.clone().unwrap_or_default(),
                    empty_layer,
                });
            }
        }
        rows.reverse();
        self.assign_ids(image, history, &mut rows)?;
        Ok(rows)
    }

    /// Puts the IDs of `image` and its ancestors on their rows (see the module docs).
    fn assign_ids(
        &self,
        image: &StoredImage,
        history: &[HistoryEntry],
        rows: &mut [HistoryRow],
    ) -> Result<(), Error> {
        if rows.is_empty() {
            return Ok(());
        }
        rows[0].id = Some(image.id);
        rows[0].tags = image.tags.clone();
        // Every other stored image: (id, tags, history, diff_ids, recorded parent).
        let mut others = Vec::new();
        for record in self.images()? {
            if record.id == image.id {
                continue;
            }
            let Ok(other) = self.image(&record) else {
                continue;
            };
            others.push((
                record.id,
                record.tags,
                other.config.history,
                other.diff_ids,
                other.meta.parent,
            ));
        }
        let mut seen = BTreeSet::from([image.id]);
        let mut current = (image.meta.parent, history.to_vec(), image.diff_ids.clone());
        let mut row = 0;
        loop {
            let (parent, current_history, current_layers) = &current;
            let is_prefix = |h: &Vec<HistoryEntry>, l: &Vec<Digest>| {
                h.len() < current_history.len()
                    && current_history.starts_with(h)
                    && current_layers.starts_with(l)
            };
            let explicit = parent.and_then(|p| others.iter().find(|o| o.0 == p));
            let found = match explicit {
                Some(o) => Some(o),
                None => others
                    .iter()
                    .filter(|o| !o.2.is_empty() && is_prefix(&o.2, &o.3))
                    .max_by_key(|o| o.2.len()),
            };
            let Some((id, tags, h, layers, grandparent)) = found else {
                break;
            };
            if !seen.insert(*id) {
                break;
            }
            row = if is_prefix(h, layers) {
                row + current_history.len() - h.len()
            } else {
                row + 1
            };
            let Some(slot) = rows.get_mut(row) else {
                break;
            };
            slot.id = Some(*id);
            slot.tags = tags.clone();
            current = (*grandparent, h.clone(), layers.clone());
        }
        Ok(())
    }
}
