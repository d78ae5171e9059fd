/// One share of a window's partition explanation, so a large budget can be spread over several
/// tasks. Every part expands the top of the hierarchy the same way (the fewest levels that give
/// at least `count` region-context items: 4 per level), takes every `count`-th of those items
/// from `index` on, and expands them best-first with its share of the budget. The parts' values
/// add up to the window's explanation: each item's value is split only among its own pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    pub index: usize,
    pub count: usize,
}

impl Part {
    pub const WHOLE: Part = Part { index: 0, count: 1 };

    /// Levels every part expands in common (4 items per level, at least `count` items).
    pub fn shared_levels(self) -> u32 {
        let mut levels = 0;
        while 4usize.pow(levels) < self.count {
            levels += 1;
        }
        levels
    }
}
