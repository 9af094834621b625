from beam_style_transfer.pipeline.main import main

main()
