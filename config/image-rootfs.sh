#!/bin/sh
# Lays out the image's root filesystem in OUT: the memoctopus binary and the shared libraries it
# loads (glibc, libgcc_s, the loader), nothing else. config/Dockerfile runs it in its build
# stage; the deploy test runs it on the release binary to build the same image without a
# registry (podman build --build-context build=DIR).
#   usage: config/image-rootfs.sh BINARY OUT
set -eu
binary=$1
out=$2
mkdir -p "$out/out/usr/local/bin"
cp "$binary" "$out/out/usr/local/bin/memoctopus"
for lib in $(ldd "$binary" | grep -o '/[^ ]*'); do
  cp --parents -L "$lib" "$out/out/"
done
