/// Every action a key can be bound to: the one table the keymap, the help overlay and the
/// command palette read. (name, description)
pub const ACTIONS: &[(&str, &str)] = &[
    ("quit", "Quit Atelier"),
    ("help", "Show the keys of the focused pane"),
    ("palette", "Open the command palette"),
    ("focus-next", "Focus the next pane"),
    ("focus-prev", "Focus the previous pane"),
    ("focus-queue", "Focus the library / queue pane"),
    ("focus-transcript", "Focus the transcript pane"),
    ("focus-tags", "Focus the tags pane"),
    ("focus-generate", "Focus the generate pane"),
    ("focus-preview", "Focus the preview pane"),
    ("cycle-theme", "Switch to the next theme"),
    ("down", "Move down"),
    ("up", "Move up"),
    ("top", "Jump to the first item"),
    ("bottom", "Jump to the last item"),
    ("page-down", "Move down a page"),
    ("page-up", "Move up a page"),
    ("search", "Search"),
    ("search-next", "Next search match"),
    ("search-prev", "Previous search match"),
    ("open", "Open the item under the cursor"),
    ("toggle-mark", "Mark or unmark the item under the cursor"),
    ("visual-select", "Start or end a visual range selection"),
    ("cancel", "Cancel / close"),
];

pub fn action_description(name: &str) -> Option<&'static str> {
    ACTIONS.iter().find(|(n, _)| *n == name).map(|(_, d)| *d)
}
