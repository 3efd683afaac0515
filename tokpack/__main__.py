from tokpack.cli import console

console()
