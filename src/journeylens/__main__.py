from journeylens.cli.app import main

main()
