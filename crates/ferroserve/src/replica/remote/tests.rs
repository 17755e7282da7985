//! A remote replica against a stand-in peer: answers, errors renamed, an unreachable peer, ejection, deadlines.
