//! The seam between local delivery and alias expansion. Delivery only needs "what does
//! this local part expand to"; the `aliases` module (databases, `:include:`, owners,
//! loops) answers through [`AliasExpander`]. The types mirror that module's expansion
//! result, so an adapter is a field-for-field copy.

/// A final destination of a recipient after alias expansion.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    /// The mailbox of a local user (not yet checked to exist).
    Mailbox { user: String },
    /// An address with a domain, local or remote: delivered by re-submission.
    Forward { address: String },
    /// `|command`, run as `uid`/`gid` (`default_privs` for root-owned tables).
    Command { command: String, uid: u32, gid: u32 },
    /// `/path`, appended to as `uid`/`gid`.
    File { path: String, uid: u32, gid: u32 },
}

/// A destination with how it was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub destination: Destination,
    /// The aliases (and `:include:PATH`s) expanded on the way, outermost first; empty
    /// when the recipient is no alias.
    pub chain: Vec<String>,
    /// `owner-NAME@ORIGIN` when an alias on the way has an owner: the envelope sender of
    /// what is sent on, so that errors go to the list owner.
    pub sender: Option<String>,
}

/// A target that cannot be delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub target: String,
    pub reason: String,
    /// `5.x.x` bounces, `4.x.x` defers.
    pub dsn: String,
}

/// Everything one recipient expands to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expansion {
    pub deliveries: Vec<Delivery>,
    pub failures: Vec<Failure>,
}

/// Alias expansion as delivery sees it. Implementations are shared by the daemon's
/// delivery threads, so they take `&self` (and lock inside if they must).
pub trait AliasExpander: Send + Sync {
    /// Expands a local part (as in the recipient address; case-insensitive). A name that
    /// is no alias expands to its own mailbox, with an empty chain.
    fn expand(&self, local_part: &str) -> Expansion;
}

/// No alias tables (`alias_maps =`): every name is its own mailbox.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAliases;

impl AliasExpander for NoAliases {
    fn expand(&self, local_part: &str) -> Expansion {
        Expansion {
            deliveries: vec![Delivery {
                destination: Destination::Mailbox {
                    user: local_part.to_lowercase(),
                },
                chain: Vec::new(),
                sender: None,
            }],
            failures: Vec::new(),
        }
    }
}
