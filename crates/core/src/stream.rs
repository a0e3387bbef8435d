//! A stream's identity: the aggregate type and the instance's id.

/// One aggregate instance's stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamId {
    pub aggregate: String,
    pub id: String,
}

impl StreamId {
    pub fn new(aggregate: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            aggregate: aggregate.into(),
            id: id.into(),
        }
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.aggregate, self.id)
    }
}
