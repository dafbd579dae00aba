//! The pipelines of the `hello` example.

mod fail_demo;
mod hello;

fn main() {
    sparkwing::main(vec![
        hello::pipeline(),
        fail_demo::pipeline(),
        // sparkwing:pipelines (`sparkwing pipeline new` adds entries above this line)
    ]);
}
