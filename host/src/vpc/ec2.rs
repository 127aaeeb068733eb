//! Placeholder: being written (EC2 adapter helper).
