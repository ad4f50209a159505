from e3bench.cli.app import main

main()
