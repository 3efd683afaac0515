from tokpack.cli import main

main()
