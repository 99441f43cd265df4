//! Every command a key can be bound to: one table that the keymap, the help overlay, the
//! command palette and the reducer read.

macro_rules! commands {
    ($($variant:ident => $name:literal, $desc:literal;)*) => {
        /// A bindable command (the `action` names of keymap.toml).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Cmd {
            $($variant,)*
        }

        /// (name, description) of every command, in the order the palette lists them.
        pub const ACTIONS: &[(&str, &str)] = &[$(($name, $desc),)*];

        impl Cmd {
            pub const ALL: &[Cmd] = &[$(Cmd::$variant,)*];

            pub fn name(self) -> &'static str {
                match self { $(Cmd::$variant => $name,)* }
            }

            pub fn description(self) -> &'static str {
                match self { $(Cmd::$variant => $desc,)* }
            }

            pub fn from_name(name: &str) -> Option<Cmd> {
                match name { $($name => Some(Cmd::$variant),)* _ => None }
            }
        }
    };
}

commands! {
    Quit => "quit", "Quit Atelier";
    Help => "help", "Show every key (generated from the live keymap)";
    Palette => "palette", "Open the command palette";
    FocusNext => "focus-next", "Focus the next pane";
    FocusPrev => "focus-prev", "Focus the previous pane";
    FocusQueue => "focus-queue", "Focus the library / queue pane";
    FocusTranscript => "focus-transcript", "Focus the transcript pane";
    FocusTags => "focus-tags", "Focus the tags pane";
    FocusGenerate => "focus-generate", "Focus the generate pane";
    FocusPreview => "focus-preview", "Focus the preview pane";
    CycleTheme => "cycle-theme", "Switch to the next theme";
    ExpandError => "expand-error", "Show the last error in full";
    Fullscreen => "fullscreen", "Toggle the focused pane full screen";
    Down => "down", "Move down";
    Up => "up", "Move up";
    Top => "top", "Jump to the first item";
    Bottom => "bottom", "Jump to the last item";
    PageDown => "page-down", "Move down a page";
    PageUp => "page-up", "Move up a page";
    Search => "search", "Search";
    SearchNext => "search-next", "Next search match";
    SearchPrev => "search-prev", "Previous search match";
    Open => "open", "Open the item under the cursor";
    ToggleMark => "toggle-mark", "Mark or unmark the item under the cursor";
    VisualSelect => "visual-select", "Start or end a visual range selection";
    Cancel => "cancel", "Cancel / close / clear the selection";
    Enqueue => "enqueue", "Queue the selected files (transcribe audio, tag images)";
    Retry => "retry", "Retry the failed or cancelled job under the cursor";
    CancelJob => "cancel-job", "Cancel the job under the cursor";
    PriorityUp => "priority-up", "Raise the priority of the job under the cursor";
    PriorityDown => "priority-down", "Lower the priority of the job under the cursor";
    FilterKind => "filter-kind", "Filter the library by kind (all, audio, image, prompt, other)";
    FilterState => "filter-state", "Filter the library by job state";
    PlaySegment => "play-segment", "Play the segment under the cursor (again: stop)";
    EditSegment => "edit-segment", "Edit the text of the segment under the cursor";
    Save => "save", "Save the edited transcript (rewrites every output format)";
    Export => "export", "Export the transcript in the formats you type";
    RenameSpeaker => "rename-speaker", "Rename the speaker under the cursor (rewrites every format)";
    FilterSpeaker => "filter-speaker", "Show only the speaker under the cursor (again: all)";
    PlaySpeaker => "play-speaker", "Play every turn of the speaker under the cursor (again: stop)";
    Diarize => "diarize", "Transcribe again, telling the speakers apart";
    NextLabelSet => "next-label-set", "Switch to the next CLIP label set";
    TagNext => "tag-next", "Move the tag cursor right";
    TagPrev => "tag-prev", "Move the tag cursor left";
    AcceptTag => "accept-tag", "Accept the tag under the tag cursor for the selection";
    RejectTag => "reject-tag", "Reject the tag under the tag cursor for the selection";
    AddTag => "add-tag", "Add a custom tag to the selection";
    ApplyTags => "apply-tags", "Write the selection's tags to sidecars and captions";
    Undo => "undo", "Undo the last tag change or apply";
    Similar => "similar", "Find images similar to the one under the cursor";
    EditPrompt => "edit-prompt", "Edit the prompt";
    EditNegative => "edit-negative", "Edit the negative prompt";
    EditField => "edit-field", "Edit the parameter under the cursor";
    Increase => "increase", "Increase the parameter under the cursor";
    Decrease => "decrease", "Decrease the parameter under the cursor";
    Generate => "generate", "Generate an image with these parameters";
    CancelGenerate => "cancel-generate", "Cancel the running generation";
    SeedLock => "seed-lock", "Lock or unlock the seed (locked: prompt edits regenerate with it)";
    SeedUp => "seed-up", "Seed + 1";
    SeedDown => "seed-down", "Seed - 1";
    SeedRandom => "seed-random", "New random seed";
    HistoryNext => "history-next", "Select the next generation in the history";
    HistoryPrev => "history-prev", "Select the previous generation in the history";
    Restore => "restore", "Restore the parameters of the selected generation";
    Compare => "compare", "Compare the selected generation with the current one side by side";
}

pub fn action_description(name: &str) -> Option<&'static str> {
    Cmd::from_name(name).map(Cmd::description)
}
