from e3bench.cli import main

main()
