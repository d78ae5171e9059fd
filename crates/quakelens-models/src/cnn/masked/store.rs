//! Activations kept per coalition so that a coalition extending it recomputes only what its
//! added rectangle reaches. A coalition stores only the cells that differ from its parent's;
//! reading a cell walks up to the nearest ancestor that stored it.

use std::collections::HashMap;

/// Rows `r0..r1` × columns `c0..c1` of a map (half-open).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Rect {
    pub r0: usize,
    pub r1: usize,
    pub c0: usize,
    pub c1: usize,
}

impl Rect {
    /// All cells of a `rows × cols` map.
    pub fn sized(rows: usize, cols: usize) -> Rect {
        Rect {
            r0: 0,
            r1: rows,
            c0: 0,
            c1: cols,
        }
    }

    pub fn contains(&self, r: usize, c: usize) -> bool {
        (self.r0..self.r1).contains(&r) && (self.c0..self.c1).contains(&c)
    }

    pub fn width(&self) -> usize {
        self.c1 - self.c0
    }

    pub fn cells(&self) -> usize {
        (self.r1 - self.r0) * self.width()
    }

    /// One more cell on every side, cut to a `rows × cols` map: what a 3 × 3 convolution with
    /// padding 1 changes when this rectangle of its input changes.
    pub fn grown(&self, rows: usize, cols: usize) -> Rect {
        Rect {
            r0: self.r0.saturating_sub(1),
            r1: (self.r1 + 1).min(rows),
            c0: self.c0.saturating_sub(1),
            c1: (self.c1 + 1).min(cols),
        }
    }

    /// Cells in row-major order.
    pub fn iter(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (self.r0..self.r1).flat_map(move |r| (self.c0..self.c1).map(move |c| (r, c)))
    }
}

/// A rectangle of a map's cells, `channels` values each, row-major `[row][col][channel]`.
pub(super) struct Patch {
    pub rect: Rect,
    pub channels: usize,
    pub values: Vec<f32>,
}

impl Patch {
    /// A patch to be filled cell by cell, row-major.
    pub fn empty(rect: Rect, channels: usize) -> Self {
        Self {
            rect,
            channels,
            values: Vec::with_capacity(rect.cells() * channels),
        }
    }

    pub fn get(&self, r: usize, c: usize) -> Option<&[f32]> {
        if !self.rect.contains(r, c) {
            return None;
        }
        let at = ((r - self.rect.r0) * self.rect.width() + c - self.rect.c0) * self.channels;
        Some(&self.values[at..at + self.channels])
    }

    /// Cell (r, c)'s values; the cell must be in the patch.
    pub fn get_mut(&mut self, r: usize, c: usize) -> &mut [f32] {
        assert!(
            self.rect.contains(r, c),
            "cell ({r}, {c}) outside {:?}",
            self.rect
        );
        let at = ((r - self.rect.r0) * self.rect.width() + c - self.rect.c0) * self.channels;
        &mut self.values[at..at + self.channels]
    }
}

/// One coalition's conv2 sums (bias included, before pooling), conv2 activations (after
/// pooling and ReLU) and conv3 sums (before ReLU) where they differ from its parent's, and
/// fc1's input sum before the bias.
pub(super) struct Node {
    /// `None` for a coalition computed whole: its patches cover the maps.
    pub parent: Option<usize>,
    pub z2: Patch,
    pub a2: Patch,
    pub z3: Patch,
    pub hidden: Vec<f64>,
}

/// Coalitions evaluated so far, up to a number of nodes.
pub(super) struct Store {
    capacity: usize,
    index: HashMap<Vec<u64>, usize>,
    nodes: Vec<Node>,
}

impl Store {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            index: HashMap::new(),
            nodes: Vec::new(),
        }
    }

    pub fn find(&self, coalition: &[u64]) -> Option<usize> {
        self.index.get(coalition).copied()
    }

    pub fn node(&self, id: usize) -> &Node {
        &self.nodes[id]
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Keeps `node` for `coalition` unless it is known already or the store is full.
    pub fn insert(&mut self, coalition: &[u64], node: Node) {
        if self.nodes.len() >= self.capacity || self.index.contains_key(coalition) {
            return;
        }
        self.index.insert(coalition.to_vec(), self.nodes.len());
        self.nodes.push(node);
    }

    /// conv2 sums of coalition `id` at cell (r, c) before pooling.
    pub fn z2(&self, id: usize, r: usize, c: usize) -> &[f32] {
        self.walk(id, r, c, |n| &n.z2)
    }

    /// conv2 activations of coalition `id` at cell (r, c).
    pub fn a2(&self, id: usize, r: usize, c: usize) -> &[f32] {
        self.walk(id, r, c, |n| &n.a2)
    }

    /// conv3 sums (bias included, before ReLU) of coalition `id` at cell (r, c).
    pub fn z3(&self, id: usize, r: usize, c: usize) -> &[f32] {
        self.walk(id, r, c, |n| &n.z3)
    }

    fn walk(&self, mut id: usize, r: usize, c: usize, map: impl Fn(&Node) -> &Patch) -> &[f32] {
        loop {
            let node = &self.nodes[id];
            if let Some(v) = map(node).get(r, c) {
                return v;
            }
            // A root covers the whole map, so a cell inside it is always found.
            id = node
                .parent
                .expect("a coalition computed whole stores every cell");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(rect: Rect, fill: f32) -> Patch {
        Patch {
            rect,
            channels: 2,
            values: vec![fill; rect.cells() * 2],
        }
    }

    #[test]
    fn cells_come_from_the_nearest_coalition_that_changed_them() {
        let all = Rect {
            r0: 0,
            r1: 4,
            c0: 0,
            c1: 5,
        };
        let mut store = Store::new(2);
        let root = Node {
            parent: None,
            z2: patch(all, 1.0),
            a2: patch(all, 1.0),
            z3: patch(all, 1.0),
            hidden: vec![0.0],
        };
        store.insert(&[0], root);
        let small = Rect {
            r0: 1,
            r1: 2,
            c0: 3,
            c1: 5,
        };
        store.insert(
            &[1],
            Node {
                parent: Some(0),
                z2: patch(small, 2.0),
                a2: patch(small, 2.0),
                z3: patch(small.grown(4, 5), 3.0),
                hidden: vec![0.0],
            },
        );
        // Full: a third coalition is not kept.
        store.insert(
            &[2],
            Node {
                parent: Some(1),
                z2: patch(small, 9.0),
                a2: patch(small, 9.0),
                z3: patch(small, 9.0),
                hidden: vec![0.0],
            },
        );
        assert_eq!(store.len(), 2);
        assert_eq!(store.find(&[2]), None);
        let child = store.find(&[1]).unwrap();
        assert_eq!(store.a2(child, 1, 4), &[2.0, 2.0]);
        assert_eq!(store.a2(child, 1, 2), &[1.0, 1.0]);
        assert_eq!(store.z3(child, 0, 2), &[3.0, 3.0]);
        assert_eq!(store.z3(child, 3, 4), &[1.0, 1.0]);
        assert_eq!(
            small.grown(4, 5),
            Rect {
                r0: 0,
                r1: 3,
                c0: 2,
                c1: 5
            }
        );
    }
}
