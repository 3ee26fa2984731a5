//! Scalar CPU reference backend: plain f32 loops, parallel over independent rows only.
