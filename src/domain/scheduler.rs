//! The scheduler names: the one table of CLI names and A1111 sampler / schedule-type names.
//! The numerics are in `engine/diffusion/scheduler.rs`.

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    Ddim,
    Euler,
    EulerAncestral,
    DpmPp2M,
    DpmPp2MKarras,
    DpmPpSdeKarras,
    UniPc,
    Lms,
    Pndm,
}

/// One row per scheduler: the single table of names.
struct Names {
    kind: SchedulerKind,
    /// CLI name (`--sampler`).
    cli: &'static str,
    /// A1111 (1.8+) sampler name, written to infotext.
    a1111: &'static str,
    /// A1111 schedule type written to infotext.
    schedule: &'static str,
    /// Other schedule types A1111 runs the same way for this sampler name.
    also_schedules: &'static [&'static str],
    /// A1111 before 1.8 had no "Schedule type" and folded Karras into the sampler name.
    legacy: &'static str,
    /// What the bare sampler name meant before 1.8 (no schedule type in the infotext).
    legacy_default: bool,
}

const NAMES: &[Names] = &[
    Names {
        kind: SchedulerKind::Ddim,
        cli: "ddim",
        a1111: "DDIM",
        schedule: "Automatic",
        also_schedules: &[],
        legacy: "DDIM",
        legacy_default: true,
    },
    Names {
        kind: SchedulerKind::Euler,
        cli: "euler",
        a1111: "Euler",
        schedule: "Automatic",
        also_schedules: &["Uniform"],
        legacy: "Euler",
        legacy_default: true,
    },
    Names {
        kind: SchedulerKind::EulerAncestral,
        cli: "euler-a",
        a1111: "Euler a",
        schedule: "Automatic",
        also_schedules: &["Uniform"],
        legacy: "Euler a",
        legacy_default: true,
    },
    Names {
        kind: SchedulerKind::DpmPp2M,
        cli: "dpmpp-2m",
        a1111: "DPM++ 2M",
        schedule: "Uniform",
        also_schedules: &[],
        legacy: "DPM++ 2M",
        legacy_default: true,
    },
    Names {
        kind: SchedulerKind::DpmPp2MKarras,
        cli: "dpmpp-2m-karras",
        a1111: "DPM++ 2M",
        schedule: "Karras",
        // A1111 1.8+ runs "DPM++ 2M" with Karras sigmas when the schedule is Automatic.
        also_schedules: &["Automatic"],
        legacy: "DPM++ 2M Karras",
        legacy_default: false,
    },
    Names {
        kind: SchedulerKind::DpmPpSdeKarras,
        cli: "dpmpp-sde-karras",
        a1111: "DPM++ SDE",
        schedule: "Karras",
        also_schedules: &["Automatic"],
        legacy: "DPM++ SDE Karras",
        legacy_default: false,
    },
    Names {
        kind: SchedulerKind::UniPc,
        cli: "unipc",
        a1111: "UniPC",
        schedule: "Automatic",
        also_schedules: &[],
        legacy: "UniPC",
        legacy_default: true,
    },
    Names {
        kind: SchedulerKind::Lms,
        cli: "lms",
        a1111: "LMS",
        schedule: "Automatic",
        also_schedules: &["Uniform"],
        legacy: "LMS",
        legacy_default: true,
    },
    Names {
        kind: SchedulerKind::Pndm,
        cli: "pndm",
        a1111: "PLMS",
        schedule: "Automatic",
        also_schedules: &[],
        legacy: "PLMS",
        legacy_default: true,
    },
];

const ALL: [SchedulerKind; 9] = [
    SchedulerKind::Ddim,
    SchedulerKind::Euler,
    SchedulerKind::EulerAncestral,
    SchedulerKind::DpmPp2M,
    SchedulerKind::DpmPp2MKarras,
    SchedulerKind::DpmPpSdeKarras,
    SchedulerKind::UniPc,
    SchedulerKind::Lms,
    SchedulerKind::Pndm,
];

impl SchedulerKind {
    pub fn all() -> &'static [SchedulerKind] {
        &ALL
    }

    fn names(self) -> &'static Names {
        // Every kind has a row (tested); the fallback is never taken.
        NAMES.iter().find(|n| n.kind == self).unwrap_or(&NAMES[0])
    }

    pub fn name(self) -> &'static str {
        self.names().cli
    }

    pub fn a1111_sampler(self) -> &'static str {
        self.names().a1111
    }

    pub fn a1111_schedule_type(self) -> &'static str {
        self.names().schedule
    }

    /// A CLI name (`euler-a`), or an A1111 sampler name (`Euler a`, `DPM++ 2M Karras`; a bare
    /// name means what A1111 ran before it had schedule types). Case-insensitive.
    pub fn from_name(name: &str) -> Option<SchedulerKind> {
        Self::from_cli_name(name).or_else(|| Self::from_a1111(name.trim(), None))
    }

    /// A CLI name only (`euler-a`), case-insensitive.
    pub fn from_cli_name(name: &str) -> Option<SchedulerKind> {
        let name = name.trim();
        NAMES
            .iter()
            .find(|n| n.cli.eq_ignore_ascii_case(name))
            .map(|n| n.kind)
    }

    /// From an infotext's `Sampler` and `Schedule type` values.
    pub fn from_a1111(sampler: &str, schedule_type: Option<&str>) -> Option<SchedulerKind> {
        let sampler = sampler.trim();
        // Legacy combined names ("DPM++ 2M Karras") say the schedule themselves.
        if let Some(n) = NAMES
            .iter()
            .find(|n| n.legacy != n.a1111 && n.legacy.eq_ignore_ascii_case(sampler))
        {
            return Some(n.kind);
        }
        let mut rows = NAMES
            .iter()
            .filter(|n| n.a1111.eq_ignore_ascii_case(sampler));
        match schedule_type.map(str::trim) {
            None => rows.find(|n| n.legacy_default).map(|n| n.kind),
            Some(s) => rows
                .find(|n| {
                    n.schedule.eq_ignore_ascii_case(s)
                        || n.also_schedules.iter().any(|a| a.eq_ignore_ascii_case(s))
                })
                .map(|n| n.kind),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_one_row_and_names_round_trip() {
        for &k in SchedulerKind::all() {
            assert_eq!(NAMES.iter().filter(|n| n.kind == k).count(), 1, "{k:?}");
            assert_eq!(SchedulerKind::from_name(k.name()), Some(k));
            assert_eq!(
                SchedulerKind::from_a1111(k.a1111_sampler(), Some(k.a1111_schedule_type())),
                Some(k)
            );
        }
        assert_eq!(NAMES.len(), SchedulerKind::all().len());
    }

    #[test]
    fn a1111_names() {
        use SchedulerKind::*;
        assert_eq!(SchedulerKind::from_name("Euler a"), Some(EulerAncestral));
        assert_eq!(
            SchedulerKind::from_name("DPM++ 2M Karras"),
            Some(DpmPp2MKarras)
        );
        assert_eq!(SchedulerKind::from_name("DPM++ 2M"), Some(DpmPp2M));
        assert_eq!(
            SchedulerKind::from_a1111("DPM++ 2M", Some("Karras")),
            Some(DpmPp2MKarras)
        );
        assert_eq!(
            SchedulerKind::from_a1111("DPM++ 2M", Some("Automatic")),
            Some(DpmPp2MKarras)
        );
        assert_eq!(
            SchedulerKind::from_a1111("DPM++ 2M", Some("Uniform")),
            Some(DpmPp2M)
        );
        assert_eq!(SchedulerKind::from_a1111("DPM++ SDE", None), None);
        assert_eq!(
            SchedulerKind::from_a1111("Euler", Some("Exponential")),
            None
        );
        assert_eq!(SchedulerKind::from_name("PLMS"), Some(Pndm));
        assert_eq!(SchedulerKind::from_name("nope"), None);
    }
}
