fn main() {
    dartboard_build::link_libtorch();
}
