//! bench/warm_overhead: the smallest pipeline there is, to time `sparkwing run` itself.

mod noop;

fn main() {
    sparkwing::main(vec![
        noop::pipeline(),
        // sparkwing:pipelines (`sparkwing pipeline new` adds entries above this line)
    ]);
}
