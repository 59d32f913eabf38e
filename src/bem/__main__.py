from bem.cli import main

main()
