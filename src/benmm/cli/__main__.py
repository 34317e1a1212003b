from benmm.cli.app import main

main()
