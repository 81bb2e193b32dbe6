from vlmforge_cli.main import main

main()
