//! The configuration as text and what it becomes: the YAML wire structs (`wire`), their
//! validation into a `Catalog` (`validate`), and errors that name file, line, column and field
//! (`error`, `position`, `yaml`). Every mistake is collected, never only the first.
//!
//! `yaml` (documents, serde errors at their positions, the error collector), `position` (field
//! paths and where they sit) and `values` (parsers of addresses, subnets, digests and
//! architectures; name and host name rules) are public API: the image recipes in `xtask`
//! validate with the same machinery and the same rules.
//!
//! No I/O: the caller reads the YAML files into an `Input` and hands in a `FileProbe` for the
//! digests of local artifact files (the daemon's `appliance::config_dir` reads a directory).
//!
//! Layout of a config directory:
//! - `appliance.yaml`: the appliance's settings (addresses, DHCP mode and pool, …)
//! - `machines.yaml`: the MAC database, vendor (OUI) rules and the unknown-machine policy
//! - `menus.yaml`: boot menus
//! - every other `*.yaml`: one profile each
//! - anything else: local files that profiles name as artifact sources

pub mod error;
pub mod position;
pub mod validate;
pub mod values;
pub mod wire;
pub mod yaml;

pub use error::{ConfigError, ConfigErrors};
pub use validate::{is_yaml, validate, FileProbe, Input, ProbeError, SourceFile};

pub const SETTINGS_FILE: &str = "appliance.yaml";
pub const MACHINES_FILE: &str = "machines.yaml";
pub const MENUS_FILE: &str = "menus.yaml";
